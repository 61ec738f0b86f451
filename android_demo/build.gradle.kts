// Versions live in gradle/libs.versions.toml; each module applies the plugins it needs.
plugins {
    alias(libs.plugins.android.application) apply false
    alias(libs.plugins.kotlin.android) apply false
}
