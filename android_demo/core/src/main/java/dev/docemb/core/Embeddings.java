package dev.docemb.core;

/** What happens to the model's output before matching: dequantization and L2 normalisation. */
public final class Embeddings {
    private Embeddings() {
    }

    /** (q - zero_point) * scale for an int8 output. */
    public static float[] dequantize(byte[] output, float scale, int zeroPoint) {
        float[] out = new float[output.length];
        for (int i = 0; i < output.length; i++) {
            out[i] = (output[i] - zeroPoint) * scale;
        }
        return out;
    }

    /** A unit-length copy (the model's output already is; dequantized outputs are not quite). */
    public static float[] l2Normalize(float[] vector) {
        double sum = 0.0;
        for (float v : vector) {
            sum += (double) v * v;
        }
        float norm = (float) Math.sqrt(Math.max(sum, 1e-12));
        float[] out = new float[vector.length];
        for (int i = 0; i < vector.length; i++) {
            out[i] = vector[i] / norm;
        }
        return out;
    }

    /** Cosine of two unit vectors. */
    public static float dot(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new IllegalArgumentException("embedding sizes differ: " + a.length + " vs " + b.length);
        }
        double sum = 0.0;
        for (int i = 0; i < a.length; i++) {
            sum += (double) a[i] * b[i];
        }
        return (float) sum;
    }
}
