package dev.docemb.core;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Registered templates (name to the unit embeddings of its views), ranked against a query by the
 * cosine of each template's best view, saved in a small versioned binary format so they survive
 * app restarts (version 2 counts each template's views; version 1, one view each, still reads).
 */
public final class TemplateStore {
    private static final int MAGIC = 0x44454d42; // "DEMB"
    private static final int VERSION = 2;
    private static final int MAX_VIEWS = 64;

    private final int dim;
    private final Map<String, float[][]> templates = new LinkedHashMap<>();

    public TemplateStore(int dim) {
        this.dim = dim;
    }

    /** Registers (or replaces) `name` from one embedding, normalised to unit length. */
    public void put(String name, float[] embedding) {
        put(name, new float[][] {embedding});
    }

    /** Registers (or replaces) `name` from the embedding of each of its views, each normalised. */
    public void put(String name, float[][] views) {
        if (views.length < 1 || views.length > MAX_VIEWS) {
            throw new IllegalArgumentException(name + ": " + views.length + " views, expected 1 to " + MAX_VIEWS);
        }
        float[][] unit = new float[views.length][];
        for (int v = 0; v < views.length; v++) {
            if (views[v].length != dim) {
                throw new IllegalArgumentException("embedding of " + name + " has " + views[v].length + " values, expected " + dim);
            }
            unit[v] = Embeddings.l2Normalize(views[v]);
        }
        templates.put(name, unit);
    }

    public void remove(String name) {
        templates.remove(name);
    }

    public int size() {
        return templates.size();
    }

    public List<String> names() {
        return new ArrayList<>(templates.keySet());
    }

    /** The k best templates for `query` (a unit embedding), best first; ties keep registration order. */
    public List<Match> topK(float[] query, int k) {
        List<Match> all = new ArrayList<>();
        for (Map.Entry<String, float[][]> entry : templates.entrySet()) {
            float best = Float.NEGATIVE_INFINITY;
            for (float[] view : entry.getValue()) {
                best = Math.max(best, Embeddings.dot(query, view));
            }
            all.add(new Match(entry.getKey(), best));
        }
        Collections.sort(all, (a, b) -> Float.compare(b.score, a.score));
        return all.subList(0, Math.min(k, all.size()));
    }

    /** The best template, matched when its cosine reaches `threshold`. */
    public Decision decide(float[] query, float threshold) {
        List<Match> top = topK(query, 1);
        if (top.isEmpty()) {
            return new Decision(null, false);
        }
        Match best = top.get(0);
        return new Decision(best, best.score >= threshold);
    }

    public void write(OutputStream stream) throws IOException {
        DataOutputStream out = new DataOutputStream(stream);
        out.writeInt(MAGIC);
        out.writeInt(VERSION);
        out.writeInt(dim);
        out.writeInt(templates.size());
        for (Map.Entry<String, float[][]> entry : templates.entrySet()) {
            out.writeUTF(entry.getKey());
            out.writeShort(entry.getValue().length);
            for (float[] view : entry.getValue()) {
                for (float v : view) {
                    out.writeFloat(v);
                }
            }
        }
        out.flush();
    }

    /** Reads what write() wrote; IOException names what does not fit (another model's templates, say). */
    public static TemplateStore read(InputStream stream, int expectedDim) throws IOException {
        DataInputStream in = new DataInputStream(stream);
        if (in.readInt() != MAGIC) {
            throw new IOException("not a docemb template store");
        }
        int version = in.readInt();
        if (version != 1 && version != VERSION) {
            throw new IOException("template store version " + version + " is not supported");
        }
        int dim = in.readInt();
        if (dim != expectedDim) {
            throw new IOException("templates have " + dim + "-d embeddings, the model gives " + expectedDim + "-d");
        }
        TemplateStore store = new TemplateStore(dim);
        int count = in.readInt();
        for (int i = 0; i < count; i++) {
            String name = in.readUTF();
            int viewCount = version == 1 ? 1 : in.readUnsignedShort();
            float[][] views = new float[viewCount][dim];
            for (float[] view : views) {
                for (int j = 0; j < dim; j++) {
                    view[j] = in.readFloat();
                }
            }
            store.templates.put(name, views);
        }
        return store;
    }
}
