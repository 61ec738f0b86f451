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
import androidx.activity.ComponentActivity
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageCapture
import androidx.camera.core.ImageCaptureException
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import androidx.lifecycle.lifecycleScope
import dev.docemb.core.TemplateStore
import java.io.File
import java.util.Locale
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * Take or pick a photo; register it as a named template, or match it against the templates:
 * best template and cosine, "unknown" below the contract's threshold, and the time it took.
 */
class MainActivity : ComponentActivity() {
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

    private val cameraPermission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else toast(getString(R.string.camera_denied))
    }

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) {
            lifecycleScope.launch {
                runCatching { withContext(Dispatchers.IO) { Bitmaps.fromUri(this@MainActivity, uri) } }
                    .onSuccess(::showPhoto)
                    .onFailure { toast("Could not read the picture: ${it.message}") }
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

        loadEngine(useGpu = false)
        repository = TemplateRepository(File(filesDir, "templates.bin"), engine.contract.embeddingDim)
        val (store, problem) = repository.load()
        templates = store
        problem?.let(::toast)
        showTemplates()

        findViewById<Switch>(R.id.use_gpu).setOnCheckedChangeListener { _, checked -> loadEngine(checked) }
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
        engine.close()
        super.onDestroy()
    }

    private fun loadEngine(useGpu: Boolean) {
        if (::engine.isInitialized) engine.close()
        engine = EmbeddingEngine.load(this, useGpu)
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
            val provider = future.get()
            val preview = Preview.Builder().build().also {
                it.setSurfaceProvider(findViewById<PreviewView>(R.id.preview).surfaceProvider)
            }
            imageCapture = ImageCapture.Builder().setCaptureMode(ImageCapture.CAPTURE_MODE_MINIMIZE_LATENCY).build()
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, imageCapture)
        }, ContextCompat.getMainExecutor(this))
    }

    private fun takePhoto() {
        val capture = imageCapture ?: return toast(getString(R.string.camera_denied))
        capture.takePicture(ContextCompat.getMainExecutor(this), object : ImageCapture.OnImageCapturedCallback() {
            override fun onCaptureSuccess(image: ImageProxy) {
                val bitmap = image.use { Bitmaps.rotated(it.toBitmap(), it.imageInfo.rotationDegrees) }
                showPhoto(bitmap)
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

    private fun register(name: String, bitmap: Bitmap) {
        lifecycleScope.launch {
            val embedded = withContext(Dispatchers.Default) { engine.embed(bitmap) }
            templates.put(name, embedded.embedding)
            withContext(Dispatchers.IO) { repository.save(templates) }
            showTiming(embedded)
            result.text = "Registered \"$name\""
            showTemplates()
        }
    }

    private fun match() {
        val bitmap = photo ?: return toast(getString(R.string.no_photo))
        if (templates.size() == 0) return toast(getString(R.string.no_templates))
        lifecycleScope.launch {
            val embedded = withContext(Dispatchers.Default) { engine.embed(bitmap) }
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
