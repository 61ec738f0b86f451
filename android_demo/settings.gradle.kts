pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google() // LiteRT and AndroidX live on Google's Maven
        mavenCentral()
    }
}

rootProject.name = "docemb-demo"
include(":app", ":core")
