package dev.docemb.demo

import android.Manifest
import android.app.AlertDialog
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.os.Bundle
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.Switch
import android.widget.TextView
import android.widget.Toast
import android.util.Size
import androidx.activity.ComponentActivity
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageCapture
import androidx.camera.core.ImageCaptureException
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.core.resolutionselector.ResolutionStrategy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import androidx.lifecycle.Lifecycle
import androidx.lifecycle.lifecycleScope
import dev.docemb.core.TemplateStore
import java.io.File
import java.util.Locale
import java.util.concurrent.Executors
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * Take or pick a photo; register it as a named template, or match it against the templates:
 * best template and cosine, "unknown" below the contract's threshold, and the time it took.
 */
class MainActivity : ComponentActivity() {
    // The engine is loaded, run and closed on this one thread only (LiteRT models are not thread-safe).
    private val engineExecutor = Executors.newSingleThreadExecutor()
    private val engineThread = engineExecutor.asCoroutineDispatcher()
    private lateinit var engine: EmbeddingEngine
    private lateinit var repository: TemplateRepository
    private lateinit var templates: TemplateStore
    private var imageCapture: ImageCapture? = null
    private var photo: Bitmap? = null

    private lateinit var modelInfo: TextView
    private lateinit var result: TextView
    private lateinit var timing: TextView
    private lateinit var templateList: TextView
    private lateinit var photoView: ImageView
    private lateinit var controls: List<android.view.View>

    private val cameraPermission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else toast(getString(R.string.camera_denied))
    }

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) {
            guarded("Could not read the picture") {
                showPhoto(withContext(Dispatchers.IO) { Bitmaps.fromUri(this@MainActivity, uri) })
            }
        }
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        modelInfo = findViewById(R.id.model_info)
        result = findViewById(R.id.result)
        timing = findViewById(R.id.timing)
        templateList = findViewById(R.id.templates)
        photoView = findViewById(R.id.photo)
        val gpuSwitch = findViewById<Switch>(R.id.use_gpu)
        controls = listOf(gpuSwitch, findViewById(R.id.register), findViewById(R.id.match))

        engine = EmbeddingEngine.load(this, useGpu = false) // CPU: quick to create, so here
        showModel()
        repository = TemplateRepository(File(filesDir, "templates.bin"), engine.contract.embeddingDim)
        val (store, problem) = repository.load()
        templates = store
        problem?.let(::toast)
        showTemplates()

        gpuSwitch.setOnCheckedChangeListener { _, checked -> switchAccelerator(checked) }
        findViewById<Button>(R.id.take_photo).setOnClickListener { takePhoto() }
        findViewById<Button>(R.id.pick_photo).setOnClickListener {
            pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly))
        }
        findViewById<Button>(R.id.register).setOnClickListener { askNameAndRegister() }
        findViewById<Button>(R.id.match).setOnClickListener { match() }

        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            cameraPermission.launch(Manifest.permission.CAMERA)
        }
    }

    override fun onDestroy() {
        val last = engine
        engineExecutor.execute { last.close() } // after any embedding still running on that thread
        engineExecutor.shutdown()
        super.onDestroy()
    }

    /** Runs `block` on the main thread with the controls disabled; a failure becomes a message, not a crash. */
    private fun guarded(what: String, block: suspend () -> Unit) {
        controls.forEach { it.isEnabled = false }
        lifecycleScope.launch {
            try {
                block()
            } catch (e: CancellationException) {
                throw e
            } catch (e: Exception) {
                toast("$what: ${e.message}")
            } finally {
                controls.forEach { it.isEnabled = true }
            }
        }
    }

    private fun switchAccelerator(useGpu: Boolean) = guarded("Could not load the model") {
        val previous = engine
        engine = withContext(engineThread) {
            previous.close()
            EmbeddingEngine.load(this@MainActivity, useGpu)
        }
        showModel()
    }

    private fun showModel() {
        val contract = engine.contract
        modelInfo.text = String.format(
            Locale.US,
            "%s · %s input %dx%d · %s%s\nmatch at cosine ≥ %.4f (%s)",
            contract.modelFile, contract.inputDtype, contract.size, contract.size, engine.accelerator,
            if (engine.accelerator.name == "CPU") " (XNNPACK)" else "",
            contract.matchThreshold, contract.thresholdNote,
        )
        engine.fallbackReason?.let(::toast)
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            if (lifecycle.currentState == Lifecycle.State.DESTROYED) return@addListener
            try {
                val provider = future.get()
                val preview = Preview.Builder().build().also {
                    it.setSurfaceProvider(findViewById<PreviewView>(R.id.preview).surfaceProvider)
                }
                // about 3 MP: plenty for a 128 px model, and small enough to decode and keep in memory
                val resolution = ResolutionSelector.Builder().setResolutionStrategy(
                    ResolutionStrategy(Size(2048, 1536), ResolutionStrategy.FALLBACK_RULE_CLOSEST_LOWER_THEN_HIGHER),
                ).build()
                imageCapture = ImageCapture.Builder()
                    .setCaptureMode(ImageCapture.CAPTURE_MODE_MINIMIZE_LATENCY)
                    .setResolutionSelector(resolution)
                    .build()
                val camera = if (provider.hasCamera(CameraSelector.DEFAULT_BACK_CAMERA)) {
                    CameraSelector.DEFAULT_BACK_CAMERA
                } else {
                    CameraSelector.DEFAULT_FRONT_CAMERA
                }
                provider.unbindAll()
                provider.bindToLifecycle(this, camera, preview, imageCapture)
            } catch (e: Exception) {
                imageCapture = null
                toast("Camera unavailable (${e.message}); pick photos from the gallery")
            }
        }, ContextCompat.getMainExecutor(this))
    }

    private fun takePhoto() {
        val capture = imageCapture ?: return toast(getString(R.string.camera_denied))
        capture.takePicture(ContextCompat.getMainExecutor(this), object : ImageCapture.OnImageCapturedCallback() {
            override fun onCaptureSuccess(image: ImageProxy) {
                guarded("Could not read the photo") {
                    showPhoto(withContext(Dispatchers.Default) { image.use { Bitmaps.rotated(it.toBitmap(), it.imageInfo.rotationDegrees) } })
                }
            }

            override fun onError(exception: ImageCaptureException) {
                toast("Capture failed: ${exception.message}")
            }
        })
    }

    private fun showPhoto(bitmap: Bitmap) {
        photo = bitmap
        photoView.setImageBitmap(bitmap)
        result.text = ""
        timing.text = ""
    }

    private fun askNameAndRegister() {
        val bitmap = photo ?: return toast(getString(R.string.no_photo))
        val input = EditText(this).apply { hint = getString(R.string.template_name) }
        AlertDialog.Builder(this)
            .setTitle(R.string.register)
            .setView(input)
            .setPositiveButton(android.R.string.ok) { _, _ ->
                val name = input.text.toString().trim()
                if (name.isNotEmpty()) register(name, bitmap)
            }
            .setNegativeButton(android.R.string.cancel, null)
            .show()
    }

    private fun register(name: String, bitmap: Bitmap) = guarded("Could not register \"$name\"") {
        val views = withContext(engineThread) { engine.embedTemplate(bitmap) }
        templates.put(name, views)
        val snapshot = repository.snapshot(templates)
        withContext(Dispatchers.IO) { repository.save(snapshot) }
        result.text = "Registered \"$name\" (${views.size} views)"
        showTemplates()
    }

    private fun match() {
        val bitmap = photo ?: return toast(getString(R.string.no_photo))
        if (templates.size() == 0) return toast(getString(R.string.no_templates))
        guarded("Could not match") {
            val embedded = withContext(engineThread) { engine.embed(bitmap) }
            val decision = templates.decide(embedded.embedding, engine.contract.matchThreshold)
            val ranking = templates.topK(embedded.embedding, 3).joinToString("\n") {
                String.format(Locale.US, "  %s  %.4f", it.name, it.score)
            }
            result.text = String.format(
                Locale.US, "%s\nbest: %s (cosine %.4f)\n%s",
                if (decision.matched) "Match: ${decision.label()}" else "Unknown document",
                decision.best.name, decision.best.score, ranking,
            )
            showTiming(embedded)
        }
    }

    private fun showTiming(embedded: EmbeddingEngine.Result) {
        timing.text = String.format(
            Locale.US, "preprocess %.1f ms · inference %.1f ms on %s",
            embedded.preprocessMs, embedded.inferenceMs, engine.accelerator,
        )
    }

    private fun showTemplates() {
        templateList.text = if (templates.size() == 0) getString(R.string.no_templates)
        else "Templates (${templates.size()}): " + templates.names().joinToString(", ")
    }

    private fun toast(message: String) {
        Toast.makeText(this, message, Toast.LENGTH_LONG).show()
    }
}
