// The app's logic that needs no Android: preprocessing, matching, template store. Plain Java,
// so its tests run on any JDK (and `make android-test` runs them without Gradle).
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

// The golden-file tests: Python's input tensors, embeddings and decisions for the bundled model.
val goldenTest by tasks.registering(JavaExec::class) {
    description = "Checks the core against the golden files written by `make android-assets`."
    group = "verification"
    classpath = sourceSets["test"].runtimeClasspath
    mainClass.set("dev.docemb.core.CoreTests")
    args(rootProject.file("app/src/main/assets").absolutePath)
}

tasks.named("check") {
    dependsOn(goldenTest)
}

// CoreTests is a plain main() (no test library, so it also runs without Maven): no JUnit tests to discover.
tasks.named<Test>("test") {
    enabled = false
}
