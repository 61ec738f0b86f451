package dev.docemb.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The preprocessing contract docemb writes beside every model ({@code model.tflite.contract.json}):
 * everything the app needs to feed the model exactly as Python does, and to decide a match.
 */
public final class Contract {
    /** The exporter's marker for models that take RGB 0-255 and normalise inside. */
    public static final String BUILTIN_PREFIX = "built in";

    public final String modelFile;
    public final int size;
    public final boolean nhwc;
    public final float[] mean;
    public final float[] std;
    public final boolean builtinNormalization;
    public final String inputDtype;
    public final float inputScale;
    public final int inputZeroPoint;
    public final String outputDtype;
    public final float outputScale;
    public final int outputZeroPoint;
    public final int embeddingDim;
    /** Share of each side of the grey frame drawn around a template before it is embedded (0: none). */
    public final double templateFrame;
    /**
     * The views each registered template is embedded as, each {frame share, degrees anticlockwise};
     * a photo scores a template's best view. Contracts without them: the one framed view.
     */
    public final double[][] templateViews;
    /** Cosine at or above which a query matches a template; NaN when the contract has no threshold. */
    public final float matchThreshold;
    public final String thresholdNote;

    private Contract(Map<String, Object> root) {
        Map<String, Object> input = Json.object(root.get("input"), "input");
        Map<String, Object> output = Json.object(root.get("output"), "output");
        Map<String, Object> pre = Json.object(root.get("preprocessing"), "preprocessing");
        modelFile = (String) root.get("model_file");
        size = (int) Json.number(pre.get("size"), "preprocessing.size");
        if (!"stretch".equals(pre.get("resize")) || !"RGB".equals(pre.get("color_order"))) {
            throw new IllegalArgumentException("contract: only stretch resize of RGB images is supported, got "
                    + pre.get("resize") + " / " + pre.get("color_order"));
        }
        nhwc = "NHWC".equals(input.get("layout"));
        mean = floats(Json.array(pre.get("mean"), "preprocessing.mean"));
        std = floats(Json.array(pre.get("std"), "preprocessing.std"));
        // contracts written before templates were framed have no template_frame
        templateFrame = pre.containsKey("template_frame") ? Json.number(pre.get("template_frame"), "preprocessing.template_frame") : 0.0;
        if (!(templateFrame >= 0 && templateFrame < 0.5)) {
            throw new IllegalArgumentException("contract: preprocessing.template_frame must be in [0, 0.5), got " + templateFrame);
        }
        templateViews = pre.containsKey("template_views")
                ? views(Json.array(pre.get("template_views"), "preprocessing.template_views"))
                : new double[][] {{templateFrame, 0.0}};
        Object normalization = input.get("normalization");
        builtinNormalization = normalization instanceof String && ((String) normalization).startsWith(BUILTIN_PREFIX);
        inputDtype = (String) input.get("dtype");
        Map<String, Object> inQuant = quantization(input);
        inputScale = inQuant == null ? Float.NaN : (float) Json.number(inQuant.get("scale"), "input.quantization.scale");
        inputZeroPoint = inQuant == null ? 0 : (int) Json.number(inQuant.get("zero_point"), "input.quantization.zero_point");
        if (!"float32".equals(inputDtype) && !"int8".equals(inputDtype)) {
            throw new IllegalArgumentException("contract: input dtype " + inputDtype + " is not supported (float32 or int8)");
        }
        if ("int8".equals(inputDtype) && inQuant == null) {
            throw new IllegalArgumentException("contract: int8 input without scale and zero point");
        }
        outputDtype = (String) output.get("dtype");
        Map<String, Object> outQuant = quantization(output);
        outputScale = outQuant == null ? Float.NaN : (float) Json.number(outQuant.get("scale"), "output.quantization.scale");
        outputZeroPoint = outQuant == null ? 0 : (int) Json.number(outQuant.get("zero_point"), "output.quantization.zero_point");
        List<Object> outShape = Json.array(output.get("shape"), "output.shape");
        embeddingDim = (int) Json.number(outShape.get(outShape.size() - 1), "output.shape");
        Object thresholds = root.get("thresholds");
        if (thresholds instanceof Map) {
            Map<String, Object> match = Json.object(Json.object(thresholds, "thresholds").get("match"), "thresholds.match");
            matchThreshold = (float) Json.number(match.get("threshold"), "thresholds.match.threshold");
            thresholdNote = "FPR " + match.get("fpr") + " on " + match.get("eval_set");
        } else {
            matchThreshold = Float.NaN;
            thresholdNote = "no threshold in the contract";
        }
    }

    /** Reads a contract; IllegalArgumentException says which field is wrong. */
    public static Contract parse(String json) {
        return new Contract(Json.object(Json.parse(json), "contract"));
    }

    public boolean int8Input() {
        return "int8".equals(inputDtype);
    }

    public int inputLength() {
        return size * size * 3;
    }

    private static Map<String, Object> quantization(Map<String, Object> tensor) {
        Object q = tensor.get("quantization");
        return q instanceof Map ? Json.object(q, "quantization") : null;
    }

    private static double[][] views(List<Object> values) {
        List<double[]> views = new ArrayList<>();
        for (Object value : values) {
            Map<String, Object> view = Json.object(value, "preprocessing.template_views[]");
            double frame = Json.number(view.get("frame"), "preprocessing.template_views[].frame");
            double degrees = Json.number(view.get("degrees"), "preprocessing.template_views[].degrees");
            if (!(frame >= 0 && frame < 0.5) || !(Math.abs(degrees) <= 45)) {
                throw new IllegalArgumentException("contract: a template view needs a frame in [0, 0.5) and at most 45 degrees, got "
                        + frame + " / " + degrees);
            }
            views.add(new double[] {frame, degrees});
        }
        if (views.isEmpty()) {
            throw new IllegalArgumentException("contract: preprocessing.template_views is empty");
        }
        return views.toArray(new double[0][]);
    }

    private static float[] floats(List<Object> values) {
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) Json.number(values.get(i), "number");
        }
        return out;
    }
}
