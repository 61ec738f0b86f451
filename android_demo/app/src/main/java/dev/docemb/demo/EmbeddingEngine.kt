package dev.docemb.demo

import android.content.Context
import android.graphics.Bitmap
import android.os.SystemClock
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import dev.docemb.core.Contract
import dev.docemb.core.Embeddings
import dev.docemb.core.ModelInput
import dev.docemb.core.Preprocessor

/**
 * The bundled model and its contract: a Bitmap in, a unit-length embedding out. Preprocessing
 * is the core module's, which the golden files hold to Python's bit for bit. Not thread-safe:
 * load, embed and close it on one thread (MainActivity uses a single-thread dispatcher).
 */
class EmbeddingEngine private constructor(
    private val model: CompiledModel,
    val contract: Contract,
    val accelerator: Accelerator,
    /** Why the GPU was asked for and not used, or null. */
    val fallbackReason: String?,
) : AutoCloseable {
    private val preprocessor = Preprocessor(contract)

    class Result(val embedding: FloatArray, val preprocessMs: Double, val inferenceMs: Double)

    /** A photo to its embedding, with the time preprocessing and inference took. */
    fun embed(bitmap: Bitmap): Result {
        val start = SystemClock.elapsedRealtimeNanos()
        val input = preprocessor.fromArgb(pixels(bitmap), bitmap.width, bitmap.height)
        val prepared = SystemClock.elapsedRealtimeNanos()
        val embedding = infer(input)
        return Result(embedding, (prepared - start) / 1e6, (SystemClock.elapsedRealtimeNanos() - prepared) / 1e6)
    }

    /** A template to the embedding of each view the contract registers it as (how the match threshold was measured). */
    fun embedTemplate(bitmap: Bitmap): Array<FloatArray> =
        preprocessor.templateViewsFromArgb(pixels(bitmap), bitmap.width, bitmap.height).map { infer(it) }.toTypedArray()

    private fun pixels(bitmap: Bitmap): IntArray {
        val pixels = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(pixels, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        return pixels
    }

    private fun infer(input: ModelInput): FloatArray {
        val inputs = model.createInputBuffers()
        val outputs = model.createOutputBuffers()
        try {
            if (input.isInt8) inputs[0].writeInt8(input.int8) else inputs[0].writeFloat(input.floats)
            model.run(inputs, outputs)
            val raw = if (contract.outputDtype == "int8") {
                Embeddings.dequantize(outputs[0].readInt8(), contract.outputScale, contract.outputZeroPoint)
            } else {
                outputs[0].readFloat()
            }
            // a model need not give exactly unit length (int8 graphs once did not): normalise, as Python does
            return Embeddings.l2Normalize(raw)
        } finally {
            inputs.forEach { it.close() }
            outputs.forEach { it.close() }
        }
    }

    override fun close() = model.close()

    companion object {
        const val MODEL_ASSET = "model.tflite"

        /** XNNPACK on the CPU by default; with [useGpu], the GPU accelerator, else the CPU with the reason. */
        fun load(context: Context, useGpu: Boolean, threads: Int = 4): EmbeddingEngine {
            val contract = Contract.parse(
                context.assets.open("$MODEL_ASSET.contract.json").bufferedReader().use { it.readText() },
            )
            var reason: String? = null
            if (useGpu) {
                try {
                    val gpu = CompiledModel.create(context.assets, MODEL_ASSET, CompiledModel.Options(Accelerator.GPU), null)
                    return EmbeddingEngine(gpu, contract, Accelerator.GPU, null)
                } catch (e: Exception) { // LiteRtException, or a driver's own error
                    reason = "GPU not available (${e.message}); running on the CPU"
                }
            }
            val options = CompiledModel.Options(Accelerator.CPU).apply {
                cpuOptions = CompiledModel.CpuOptions(numThreads = threads)
            }
            val cpu = CompiledModel.create(context.assets, MODEL_ASSET, options, null)
            return EmbeddingEngine(cpu, contract, Accelerator.CPU, reason)
        }
    }
}
