package dev.docemb.demo

import dev.docemb.core.TemplateStore
import java.io.ByteArrayOutputStream
import java.io.File
import java.io.IOException

/** Registered templates in the app's private storage, replaced atomically on every change. */
class TemplateRepository(private val file: File, private val dim: Int) {
    /** The saved templates, or an empty store and the reason the saved ones could not be used. */
    fun load(): Pair<TemplateStore, String?> {
        if (!file.exists()) return TemplateStore(dim) to null
        return try {
            file.inputStream().buffered().use { TemplateStore.read(it, dim) } to null
        } catch (e: IOException) {
            TemplateStore(dim) to "Saved templates not loaded (${e.message}); register them again for this model."
        }
    }

    /** The store as bytes, taken on the thread that changes it, so saving never sees it half-changed. */
    fun snapshot(store: TemplateStore): ByteArray = ByteArrayOutputStream().also { store.write(it) }.toByteArray()

    fun save(snapshot: ByteArray) {
        val tmp = File(file.parentFile, "${file.name}.tmp")
        tmp.writeBytes(snapshot)
        if (!tmp.renameTo(file)) throw IOException("could not replace $file")
    }
}
