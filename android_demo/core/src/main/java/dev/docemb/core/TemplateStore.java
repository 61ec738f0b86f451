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
 * Registered templates (name to unit embedding), ranked against a query by cosine, saved in a
 * small versioned binary format so they survive app restarts.
 */
public final class TemplateStore {
    private static final int MAGIC = 0x44454d42; // "DEMB"
    private static final int VERSION = 1;

    private final int dim;
    private final Map<String, float[]> templates = new LinkedHashMap<>();

    public TemplateStore(int dim) {
        this.dim = dim;
    }

    /** Registers (or replaces) `name`; the embedding is normalised to unit length. */
    public void put(String name, float[] embedding) {
        if (embedding.length != dim) {
            throw new IllegalArgumentException("embedding of " + name + " has " + embedding.length + " values, expected " + dim);
        }
        templates.put(name, Embeddings.l2Normalize(embedding));
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
        for (Map.Entry<String, float[]> entry : templates.entrySet()) {
            all.add(new Match(entry.getKey(), Embeddings.dot(query, entry.getValue())));
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
        for (Map.Entry<String, float[]> entry : templates.entrySet()) {
            out.writeUTF(entry.getKey());
            for (float v : entry.getValue()) {
                out.writeFloat(v);
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
        if (version != VERSION) {
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
            float[] embedding = new float[dim];
            for (int j = 0; j < dim; j++) {
                embedding[j] = in.readFloat();
            }
            store.templates.put(name, embedding);
        }
        return store;
    }
}
