package dev.docemb.core;

import java.util.Arrays;

/**
 * RGB pixels to the model's input tensor, exactly as docemb's Python preprocessing does it:
 * stretch-resize with Pillow's antialiased bilinear filter (same fixed-point arithmetic, so the
 * same uint8 pixels), then /255, (x - mean) / std in float32, the contract's layout, and int8
 * quantization with the input's scale and zero point when the model takes int8.
 */
public final class Preprocessor {
    /** Pillow's fixed-point precision for 8-bit resampling (32 - 8 - 2). */
    private static final int PRECISION_BITS = 22;

    private final Contract contract;
    private final float[] meanScaled = new float[3];
    private final float[] invStdScaled = new float[3];

    public Preprocessor(Contract contract) {
        this.contract = contract;
        for (int c = 0; c < 3; c++) {
            // float32 throughout, in Python's order: mean * 255, 1 / (std * 255)
            meanScaled[c] = contract.mean[c] * 255.0f;
            invStdScaled[c] = 1.0f / (contract.std[c] * 255.0f);
        }
    }

    /** Pixels as Android's Bitmap.getPixels gives them (0xAARRGGBB, row by row) to the model input. */
    public ModelInput fromArgb(int[] argb, int width, int height) {
        byte[] rgb = new byte[width * height * 3];
        for (int i = 0; i < width * height; i++) {
            rgb[i * 3] = (byte) (argb[i] >> 16);
            rgb[i * 3 + 1] = (byte) (argb[i] >> 8);
            rgb[i * 3 + 2] = (byte) argb[i];
        }
        return fromRgb(rgb, width, height);
    }

    /** A template's pixels (0xAARRGGBB) to the model input: framed as the contract says, then as a photo. */
    public ModelInput templateFromArgb(int[] argb, int width, int height) {
        return fromArgb(frame(argb, width, height), width + 2 * border(width), height + 2 * border(height));
    }

    /** Python's round(side * template_frame): half to even, as Math.rint. */
    int border(int side) {
        return (int) Math.rint(side * contract.templateFrame);
    }

    /** The image in the middle of a mid-grey (128) canvas, as docemb.preprocess.loose_frame draws it. */
    int[] frame(int[] argb, int width, int height) {
        int dx = border(width);
        int dy = border(height);
        int outWidth = width + 2 * dx;
        int[] out = new int[outWidth * (height + 2 * dy)];
        Arrays.fill(out, 0xff808080);
        for (int y = 0; y < height; y++) {
            System.arraycopy(argb, y * width, out, (y + dy) * outWidth + dx, width);
        }
        return out;
    }

    /** Interleaved 8-bit RGB (row by row) to the model input. */
    public ModelInput fromRgb(byte[] rgb, int width, int height) {
        if (rgb.length != width * height * 3) {
            throw new IllegalArgumentException("expected " + width * height * 3 + " RGB bytes, got " + rgb.length);
        }
        byte[] resized = resize(rgb, width, height, contract.size, contract.size);
        return contract.int8Input() ? ModelInput.ofInt8(quantize(normalize(resized))) : ModelInput.ofFloats(normalize(resized));
    }

    /** Normalised float32 values in the contract's layout (or raw 0-255 when the model normalises itself). */
    float[] normalize(byte[] resized) {
        int size = contract.size;
        int pixels = size * size;
        float[] out = new float[pixels * 3];
        for (int p = 0; p < pixels; p++) {
            for (int c = 0; c < 3; c++) {
                float value = resized[p * 3 + c] & 0xff;
                if (!contract.builtinNormalization) {
                    value = (value - meanScaled[c]) * invStdScaled[c];
                }
                out[contract.nhwc ? p * 3 + c : c * pixels + p] = value;
            }
        }
        return out;
    }

    /** round(x / scale) + zero_point, half to even as numpy rounds, clipped to int8. */
    byte[] quantize(float[] values) {
        byte[] out = new byte[values.length];
        for (int i = 0; i < values.length; i++) {
            double q = Math.rint(values[i] / contract.inputScale) + contract.inputZeroPoint;
            out[i] = (byte) Math.max(-128, Math.min(127, q));
        }
        return out;
    }

    /**
     * Pillow's Image.resize(BILINEAR) for 8-bit RGB: one pass per axis of a triangle filter
     * whose support widens with the downscale factor (antialiasing), coefficients in 22-bit
     * fixed point, each pass rounded and clipped to 0-255. The order of the passes changes the
     * last bit, so it follows Pillow 13 (the version docemb pins): horizontal first, unless the
     * height shrinks by more than twice as many pixels as the width, then vertical first.
     */
    static byte[] resize(byte[] rgb, int width, int height, int outWidth, int outHeight) {
        boolean verticalFirst = outHeight < height && height - outHeight > 2 * (width - outWidth);
        byte[] current = rgb;
        if (verticalFirst && outHeight != height) {
            current = vertical(current, width, height, outHeight);
            height = outHeight;
        }
        if (outWidth != width) {
            current = horizontal(current, width, height, outWidth);
            width = outWidth;
        }
        if (outHeight != height) {
            current = vertical(current, width, height, outHeight);
        }
        return current == rgb ? rgb.clone() : current;
    }

    /** Per output position: first input index, count, and fixed-point weights (stride = ksize). */
    private static final class Coefficients {
        final int[] first;
        final int[] count;
        final int[] weights;
        final int ksize;

        Coefficients(int inSize, int outSize) {
            double scale = (double) inSize / outSize;
            double filterScale = Math.max(scale, 1.0);
            double support = filterScale; // the bilinear filter's support is 1
            ksize = (int) Math.ceil(support) * 2 + 1;
            first = new int[outSize];
            count = new int[outSize];
            weights = new int[outSize * ksize];
            double[] k = new double[ksize];
            for (int xx = 0; xx < outSize; xx++) {
                double center = (xx + 0.5) * scale;
                double ss = 1.0 / filterScale;
                int xmin = (int) (center - support + 0.5);
                if (xmin < 0) {
                    xmin = 0;
                }
                int xmax = (int) (center + support + 0.5);
                if (xmax > inSize) {
                    xmax = inSize;
                }
                xmax -= xmin;
                double total = 0.0;
                for (int x = 0; x < xmax; x++) {
                    double w = triangle((x + xmin - center + 0.5) * ss);
                    k[x] = w;
                    total += w;
                }
                for (int x = 0; x < xmax; x++) {
                    double normalized = total != 0.0 ? k[x] / total : k[x];
                    weights[xx * ksize + x] = (int) (normalized < 0
                            ? -0.5 + normalized * (1 << PRECISION_BITS)
                            : 0.5 + normalized * (1 << PRECISION_BITS));
                }
                first[xx] = xmin;
                count[xx] = xmax;
            }
        }

        private static double triangle(double x) {
            x = Math.abs(x);
            return x < 1.0 ? 1.0 - x : 0.0;
        }
    }

    private static int clip8(int accumulated) {
        int value = accumulated >> PRECISION_BITS;
        return value < 0 ? 0 : Math.min(value, 255);
    }

    private static byte[] horizontal(byte[] in, int width, int height, int outWidth) {
        Coefficients k = new Coefficients(width, outWidth);
        byte[] out = new byte[outWidth * height * 3];
        for (int y = 0; y < height; y++) {
            int row = y * width * 3;
            for (int xx = 0; xx < outWidth; xx++) {
                for (int c = 0; c < 3; c++) {
                    int sum = 1 << (PRECISION_BITS - 1);
                    for (int x = 0; x < k.count[xx]; x++) {
                        sum += (in[row + (k.first[xx] + x) * 3 + c] & 0xff) * k.weights[xx * k.ksize + x];
                    }
                    out[(y * outWidth + xx) * 3 + c] = (byte) clip8(sum);
                }
            }
        }
        return out;
    }

    private static byte[] vertical(byte[] in, int width, int height, int outHeight) {
        Coefficients k = new Coefficients(height, outHeight);
        byte[] out = new byte[width * outHeight * 3];
        for (int yy = 0; yy < outHeight; yy++) {
            for (int x = 0; x < width; x++) {
                for (int c = 0; c < 3; c++) {
                    int sum = 1 << (PRECISION_BITS - 1);
                    for (int y = 0; y < k.count[yy]; y++) {
                        sum += (in[((k.first[yy] + y) * width + x) * 3 + c] & 0xff) * k.weights[yy * k.ksize + y];
                    }
                    out[(yy * width + x) * 3 + c] = (byte) clip8(sum);
                }
            }
        }
        return out;
    }
}
