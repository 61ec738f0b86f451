package dev.docemb.core;

import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;

/**
 * The core module's tests, with no test library (this machine reaches no Maven repository):
 * `java dev.docemb.core.CoreTests ASSETS_DIR` runs them all, prints one line per test and exits 1
 * on any failure. The golden tests hold the app's preprocessing and matching to what Python
 * computed for the same images (`make android-assets`).
 */
public final class CoreTests {
    private final Path assets;
    private final Path golden;
    private final Map<String, Object> index;
    private final Contract contract;

    private CoreTests(Path assets) throws IOException {
        this.assets = assets;
        this.golden = assets.resolve("golden");
        this.index = Json.object(Json.parse(read(golden.resolve("golden.json"))), "golden.json");
        this.contract = Contract.parse(read(assets.resolve(index.get("model") + ".contract.json")));
    }

    public static void main(String[] args) throws Exception {
        Path assets = Paths.get(args.length > 0 ? args[0] : "../app/src/main/assets");
        CoreTests tests = new CoreTests(assets);
        Map<String, Check> checks = new LinkedHashMap<>();
        checks.put("golden inputs: Java preprocessing equals Python's", tests::goldenInputsMatchPython);
        checks.put("golden decisions: same ranking, scores and match/unknown", tests::goldenDecisionsMatchPython);
        checks.put("contract: fields the app relies on", tests::contractFields);
        checks.put("template store: round trip, wrong model refused", CoreTests::storeRoundTrip);
        checks.put("decision: unknown below the threshold, matched at it", CoreTests::thresholdDecision);
        checks.put("resize: same size is a copy, flat stays flat", CoreTests::resizeBasics);
        checks.put("template frame: grey border rounded as Python rounds, image untouched", CoreTests::templateFrame);
        checks.put("template rotation: canvas, direction and grey corners as Python's", CoreTests::templateRotation);
        checks.put("json: values, escapes, errors with offsets", CoreTests::jsonReader);
        int failed = 0;
        for (Map.Entry<String, Check> check : checks.entrySet()) {
            try {
                String detail = check.getValue().run();
                System.out.println("PASS " + check.getKey() + (detail.isEmpty() ? "" : ": " + detail));
            } catch (Throwable t) {
                failed++;
                System.out.println("FAIL " + check.getKey() + ": " + t);
            }
        }
        System.out.println((checks.size() - failed) + " passed, " + failed + " failed (golden files: " + tests.golden + ")");
        System.exit(failed == 0 ? 0 : 1);
    }

    interface Check {
        String run() throws Exception;
    }

    // --- golden files ---------------------------------------------------------------------

    private List<Map<String, Object>> records(String key) {
        List<Map<String, Object>> out = new ArrayList<>();
        for (Object item : Json.array(index.get(key), key)) {
            out.add(Json.object(item, key));
        }
        return out;
    }

    /** Each golden model input (every view of every template, every query) with the one Java builds. */
    private Map<String, ModelInput> javaInputs() throws IOException {
        Preprocessor preprocessor = new Preprocessor(contract);
        Map<String, ModelInput> inputs = new java.util.LinkedHashMap<>();
        for (Map<String, Object> template : records("templates")) {
            BufferedImage image = ImageIO.read(golden.resolve((String) template.get("image")).toFile());
            int width = image.getWidth();
            int height = image.getHeight();
            List<ModelInput> views = preprocessor.templateViewsFromArgb(image.getRGB(0, 0, width, height, null, 0, width), width, height);
            List<Object> expected = Json.array(template.get("views"), "views");
            check(views.size() == expected.size(), template.get("name") + ": " + views.size() + " views, Python drew " + expected.size());
            for (int v = 0; v < views.size(); v++) {
                inputs.put((String) Json.object(expected.get(v), "view").get("input"), views.get(v));
            }
        }
        for (Map<String, Object> query : records("queries")) {
            BufferedImage image = ImageIO.read(golden.resolve((String) query.get("image")).toFile());
            inputs.put((String) query.get("input"), preprocessor.fromRgb(rgb(image), image.getWidth(), image.getHeight()));
        }
        return inputs;
    }

    private String goldenInputsMatchPython() throws IOException {
        double worst = 0;
        int differing = 0;
        int values = 0;
        Map<String, ModelInput> inputs = javaInputs();
        for (Map.Entry<String, ModelInput> entry : inputs.entrySet()) {
            ModelInput input = entry.getValue();
            Map<String, Object> record = java.util.Collections.singletonMap("name", entry.getKey());
            byte[] expected = Files.readAllBytes(golden.resolve(entry.getKey()));
            if (contract.int8Input()) {
                check(input.isInt8() && input.int8.length == expected.length, record.get("name") + ": int8 input of wrong size");
                for (int i = 0; i < expected.length; i++) {
                    int diff = Math.abs(input.int8[i] - expected[i]);
                    worst = Math.max(worst, diff);
                    differing += diff == 0 ? 0 : 1;
                }
                check(worst <= 1, record.get("name") + ": int8 input differs from Python's by " + worst + " LSB (limit 1)");
            } else {
                float[] python = littleEndianFloats(expected);
                check(input.floats.length == python.length, record.get("name") + ": float input of wrong size");
                for (int i = 0; i < python.length; i++) {
                    double diff = Math.abs(input.floats[i] - python[i]);
                    worst = Math.max(worst, diff);
                    differing += diff == 0 ? 0 : 1;
                }
                check(worst <= 1e-5, record.get("name") + ": float input differs from Python's by " + worst + " (limit 1e-5)");
            }
            values += expected.length / (contract.int8Input() ? 1 : 4);
        }
        return inputs.size() + " inputs (templates as " + contract.templateViews.length + " views), max difference " + worst
                + (contract.int8Input() ? " LSB" : "") + ", " + differing + " of " + values + " values not identical";
    }

    private String goldenDecisionsMatchPython() throws IOException {
        TemplateStore store = new TemplateStore(contract.embeddingDim);
        for (Map<String, Object> template : records("templates")) {
            List<Object> views = Json.array(template.get("views"), "views");
            float[][] embeddings = new float[views.size()][];
            for (int v = 0; v < views.size(); v++) {
                embeddings[v] = embedding(Json.object(views.get(v), "view"));
            }
            store.put((String) template.get("name"), embeddings);
        }
        float threshold = (float) Json.number(index.get("threshold"), "threshold");
        check(threshold == contract.matchThreshold, "golden threshold " + threshold + " is not the contract's " + contract.matchThreshold);
        int matched = 0;
        List<Map<String, Object>> queries = records("queries");
        for (Map<String, Object> query : queries) {
            Map<String, Object> expected = Json.object(query.get("expected"), "expected");
            float[] q = Embeddings.l2Normalize(embedding(query));
            List<Match> ranking = store.topK(q, store.size());
            List<Object> pythonRanking = Json.array(expected.get("scores"), "scores");
            for (int i = 0; i < ranking.size(); i++) {
                List<Object> pair = Json.array(pythonRanking.get(i), "score pair");
                check(ranking.get(i).name.equals(pair.get(0)), query.get("name") + ": rank " + i + " is " + ranking.get(i).name + ", Python says " + pair.get(0));
                double diff = Math.abs(ranking.get(i).score - Json.number(pair.get(1), "score"));
                check(diff <= 1e-5, query.get("name") + ": score differs from Python's by " + diff);
            }
            Decision decision = store.decide(q, threshold);
            check(decision.best.name.equals(expected.get("best")), query.get("name") + ": best " + decision.best.name + ", Python says " + expected.get("best"));
            check(decision.label().equals(expected.get("decision")), query.get("name") + ": decision " + decision.label() + ", Python says " + expected.get("decision"));
            matched += decision.matched ? 1 : 0;
        }
        return queries.size() + " queries against " + store.size() + " templates, " + matched + " matched at cosine >= " + threshold;
    }

    private String contractFields() throws IOException {
        List<Object> shape = Json.array(Json.object(index.get("input"), "input").get("shape"), "input.shape");
        check(contract.nhwc && contract.size == Json.number(shape.get(1), "shape") && Json.number(shape.get(3), "shape") == 3,
                "contract says " + contract.size + "x" + contract.size + (contract.nhwc ? " NHWC" : " NCHW") + ", golden input is " + shape);
        int dim = Files.readAllBytes(golden.resolve((String) records("queries").get(0).get("embedding"))).length / 4;
        check(contract.embeddingDim == dim, "contract says " + contract.embeddingDim + "-d embeddings, golden files hold " + dim);
        check(contract.mean.length == 3 && contract.std.length == 3, "mean/std need 3 values");
        if (contract.int8Input()) {
            check(contract.inputScale > 0 && contract.inputZeroPoint >= -128 && contract.inputZeroPoint <= 127, "int8 input needs a scale and zero point");
        }
        check(!Float.isNaN(contract.matchThreshold), "contract has no match threshold");
        return contract.modelFile + ", " + contract.inputDtype + " input, threshold " + contract.matchThreshold + " (" + contract.thresholdNote + ")";
    }

    private float[] embedding(Map<String, Object> record) throws IOException {
        return littleEndianFloats(Files.readAllBytes(golden.resolve((String) record.get("embedding"))));
    }

    // --- logic that needs no golden files ----------------------------------------------------

    private static String storeRoundTrip() throws IOException {
        TemplateStore store = new TemplateStore(3);
        store.put("bank card", new float[] {3, 0, 4});
        store.put("form", new float[] {0, 1, 0});
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        store.write(bytes);
        TemplateStore back = TemplateStore.read(new ByteArrayInputStream(bytes.toByteArray()), 3);
        check(back.names().equals(store.names()), "names changed: " + back.names());
        float[] query = {0.6f, 0, 0.8f};
        check(back.topK(query, 1).get(0).score == store.topK(query, 1).get(0).score, "scores changed");
        try {
            TemplateStore.read(new ByteArrayInputStream(bytes.toByteArray()), 256);
            throw new AssertionError("templates of a 3-d model were loaded for a 256-d one");
        } catch (IOException expected) {
            check(expected.getMessage().contains("3-d"), "unclear error: " + expected.getMessage());
        }
        TemplateStore views = new TemplateStore(2);
        views.put("tilted", new float[][] {{1, 0}, {0.6f, 0.8f}});
        check(views.topK(new float[] {0.6f, 0.8f}, 1).get(0).score == 1f, "a template must score its best view");
        // version 1 (one view per template, no view count) still reads
        ByteArrayOutputStream old = new ByteArrayOutputStream();
        java.io.DataOutputStream out = new java.io.DataOutputStream(old);
        out.writeInt(0x44454d42);
        out.writeInt(1);
        out.writeInt(2);
        out.writeInt(1);
        out.writeUTF("a");
        out.writeFloat(0);
        out.writeFloat(1);
        out.flush();
        TemplateStore v1 = TemplateStore.read(new ByteArrayInputStream(old.toByteArray()), 2);
        check(v1.topK(new float[] {0, 1}, 1).get(0).score == 1f, "a version 1 store must read");
        return bytes.size() + " bytes for 2 templates";
    }

    private static String thresholdDecision() {
        TemplateStore store = new TemplateStore(2);
        check(store.decide(new float[] {1, 0}, 0.5f).label().equals(Decision.UNKNOWN), "an empty store must answer unknown");
        store.put("id card", new float[] {1, 0});
        store.put("invoice", new float[] {0, 1});
        float[] query = Embeddings.l2Normalize(new float[] {0.8f, 0.6f});
        check(store.decide(query, 0.8f).label().equals("id card"), "cosine 0.8 must match at threshold 0.8");
        check(store.decide(query, 0.81f).label().equals(Decision.UNKNOWN), "cosine 0.8 must be unknown at threshold 0.81");
        float[] dequantized = Embeddings.dequantize(new byte[] {-128, 127}, 0.5f, -1);
        check(dequantized[0] == -63.5f && dequantized[1] == 64f, "dequantize: (q - zero point) * scale");
        return "";
    }

    private static String resizeBasics() {
        byte[] flat = new byte[50 * 30 * 3];
        java.util.Arrays.fill(flat, (byte) 200);
        byte[] small = Preprocessor.resize(flat, 50, 30, 16, 16);
        for (byte b : small) {
            check((b & 0xff) == 200, "a flat image must stay flat, got " + (b & 0xff));
        }
        byte[] same = Preprocessor.resize(flat, 50, 30, 50, 30);
        check(same != flat && java.util.Arrays.equals(same, flat), "same size must return an equal copy");
        return "";
    }

    private static String templateFrame() {
        String contract = "{\"model_file\": \"m.tflite\", \"input\": {\"layout\": \"NHWC\", \"dtype\": \"float32\"},"
                + " \"output\": {\"dtype\": \"float32\", \"shape\": [1, 4]}, \"preprocessing\": {\"size\": 8,"
                + " \"resize\": \"stretch\", \"color_order\": \"RGB\", \"mean\": [0, 0, 0], \"std\": [1, 1, 1],"
                + " \"template_frame\": 0.25}}";
        Contract parsed = Contract.parse(contract);
        check(parsed.templateViews.length == 1 && parsed.templateViews[0][0] == 0.25 && parsed.templateViews[0][1] == 0,
                "a contract without views registers the one framed view");
        // 10 x 6 at 0.25: 2.5 rounds to 2 (half to even), 1.5 to 2
        check(Preprocessor.border(10, 0.25) == 2 && Preprocessor.border(6, 0.25) == 2, "borders must round half to even");
        int[] image = new int[10 * 6];
        java.util.Arrays.fill(image, 0xff112233);
        int[] framed = Preprocessor.frame(new Preprocessor.Pixels(image, 10, 6), 0.25).argb;
        check(framed.length == 14 * 10, "framed size " + framed.length);
        check(framed[0] == 0xff808080 && framed[14 * 10 - 1] == 0xff808080, "the border must be grey 128");
        check(framed[2 * 14 + 2] == 0xff112233 && framed[7 * 14 + 11] == 0xff112233, "the image must sit inside the border");
        check(framed[2 * 14 + 1] == 0xff808080 && framed[7 * 14 + 12] == 0xff808080, "the border must be 2 pixels wide");
        try {
            Contract.parse(contract.replace("0.25", "0.5"));
            throw new AssertionError("a frame of half a side was accepted");
        } catch (IllegalArgumentException expected) {
            check(expected.getMessage().contains("template_frame"), "unclear error: " + expected.getMessage());
        }
        String viewed = contract.replace("\"template_frame\": 0.25", "\"template_frame\": 0.25, \"template_views\": [{\"frame\": 0.0, \"degrees\": -6}]");
        check(Contract.parse(viewed).templateViews[0][1] == -6, "template views must be read from the contract");
        try {
            Contract.parse(viewed.replace("-6", "60"));
            throw new AssertionError("a view turned 60 degrees was accepted");
        } catch (IllegalArgumentException expected) {
            check(expected.getMessage().contains("45 degrees"), "unclear error: " + expected.getMessage());
        }
        return "";
    }

    private static String templateRotation() {
        int[] image = new int[3 * 2];
        for (int i = 0; i < image.length; i++) {
            image[i] = 0xff000000 | (i * 40) << 16 | (i * 20) << 8 | i;
        }
        Preprocessor.Pixels in = new Preprocessor.Pixels(image, 3, 2);
        check(Preprocessor.rotate(in, 0) == in, "no turn must leave the image as it is");
        Preprocessor.Pixels turned = Preprocessor.rotate(in, 90);
        check(turned.width == 2 && turned.height == 3, "a quarter turn swaps the sides: " + turned.width + "x" + turned.height);
        // anticlockwise, as np.rot90: the top row's last pixel comes to the top left
        check(turned.argb[0] == image[2] && turned.argb[1] == image[5] && turned.argb[4] == image[0], "a quarter turn moves pixels as np.rot90");
        Preprocessor.Pixels tilted = Preprocessor.rotate(new Preprocessor.Pixels(new int[100 * 60], 100, 60), 6);
        check(tilted.width == 106 && tilted.argb[0] == 0xff808080, "a small turn grows the canvas and fills its corners grey");
        return "";
    }

    private static String jsonReader() {
        Map<String, Object> value = Json.object(Json.parse("{\"a\": [1, -2.5e1, true, null], \"b\\n\": \"\\u00e9\\\"\"}"), "test");
        List<Object> a = Json.array(value.get("a"), "a");
        check(a.get(0).equals(1.0) && a.get(1).equals(-25.0) && a.get(2).equals(Boolean.TRUE) && a.get(3) == null, "array values: " + a);
        check("\u00e9\"".equals(value.get("b\n")), "escapes: " + value.get("b\n"));
        try {
            Json.parse("{\"a\": }");
            throw new AssertionError("bad JSON was accepted");
        } catch (IllegalArgumentException expected) {
            check(expected.getMessage().contains("offset 6"), "error should name the offset: " + expected.getMessage());
        }
        return "";
    }

    // --- helpers ----------------------------------------------------------------------------

    private static void check(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    private static String read(Path path) throws IOException {
        return new String(Files.readAllBytes(path), StandardCharsets.UTF_8);
    }

    private static byte[] rgb(BufferedImage image) {
        int width = image.getWidth();
        int height = image.getHeight();
        byte[] out = new byte[width * height * 3];
        for (int y = 0; y < height; y++) {
            for (int x = 0; x < width; x++) {
                int argb = image.getRGB(x, y);
                int i = (y * width + x) * 3;
                out[i] = (byte) (argb >> 16);
                out[i + 1] = (byte) (argb >> 8);
                out[i + 2] = (byte) argb;
            }
        }
        return out;
    }

    private static float[] littleEndianFloats(byte[] bytes) {
        ByteBuffer buffer = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        float[] out = new float[bytes.length / 4];
        buffer.asFloatBuffer().get(out);
        return out;
    }
}
