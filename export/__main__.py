from docemb.cli import stage_main

stage_main("export")
