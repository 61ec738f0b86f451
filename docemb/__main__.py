"""`python -m docemb COMMAND`: the same as the `docemb` command."""

from docemb.cli import main

main()
