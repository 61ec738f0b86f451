package dev.docemb.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

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

    /**
     * A template's pixels (0xAARRGGBB) to the model input of each view the contract registers it
     * as: framed, turned, then as a photo (docemb.preprocess.TemplateView). Turned views start
     * from a copy at most twice the model's size, as Python's template_inputs.
     */
    public List<ModelInput> templateViewsFromArgb(int[] argb, int width, int height) {
        Pixels template = new Pixels(argb, width, height);
        Pixels small = null;
        List<ModelInput> inputs = new ArrayList<>();
        for (double[] view : contract.templateViews) {
            if (view[1] != 0 && small == null) {
                small = fitWithin(template, 2 * contract.size);
            }
            Pixels drawn = rotate(frame(view[1] != 0 ? small : template, view[0]), view[1]);
            inputs.add(fromArgb(drawn.argb, drawn.width, drawn.height));
        }
        return inputs;
    }

    /** docemb.preprocess.fit_within: shrunk (aspect kept, sides rounded half to even) to at most `side`. */
    static Pixels fitWithin(Pixels in, int side) {
        double scale = (double) side / Math.max(in.width, in.height);
        if (scale >= 1) {
            return in;
        }
        int outWidth = Math.max(1, (int) Math.rint(in.width * scale));
        int outHeight = Math.max(1, (int) Math.rint(in.height * scale));
        byte[] rgb = new byte[in.width * in.height * 3];
        for (int i = 0; i < in.argb.length; i++) {
            rgb[i * 3] = (byte) (in.argb[i] >> 16);
            rgb[i * 3 + 1] = (byte) (in.argb[i] >> 8);
            rgb[i * 3 + 2] = (byte) in.argb[i];
        }
        byte[] resized = resize(rgb, in.width, in.height, outWidth, outHeight);
        int[] out = new int[outWidth * outHeight];
        for (int i = 0; i < out.length; i++) {
            out[i] = 0xff000000 | (resized[i * 3] & 0xff) << 16 | (resized[i * 3 + 1] & 0xff) << 8 | (resized[i * 3 + 2] & 0xff);
        }
        return new Pixels(out, outWidth, outHeight);
    }

    /** ARGB pixels row by row, with their size. */
    static final class Pixels {
        final int[] argb;
        final int width;
        final int height;

        Pixels(int[] argb, int width, int height) {
            this.argb = argb;
            this.width = width;
            this.height = height;
        }
    }

    /** Python's round(side * share): half to even, as Math.rint. */
    static int border(int side, double share) {
        return (int) Math.rint(side * share);
    }

    /** The image in the middle of a mid-grey (128) canvas, as docemb.preprocess.loose_frame draws it. */
    static Pixels frame(Pixels in, double share) {
        int dx = border(in.width, share);
        int dy = border(in.height, share);
        int outWidth = in.width + 2 * dx;
        int[] out = new int[outWidth * (in.height + 2 * dy)];
        Arrays.fill(out, 0xff808080);
        for (int y = 0; y < in.height; y++) {
            System.arraycopy(in.argb, y * in.width, out, (y + dy) * outWidth + dx, in.width);
        }
        return new Pixels(out, outWidth, in.height + 2 * dy);
    }

    /**
     * The image turned `degrees` anticlockwise on a grey canvas just large enough, as
     * docemb.preprocess.rotated draws it: the same double arithmetic in the same order, so the
     * same pixels (StrictMath for the sine and cosine, as C's libm gives them for these angles).
     */
    static Pixels rotate(Pixels in, double degrees) {
        if (degrees == 0) {
            return in;
        }
        int w = in.width;
        int h = in.height;
        double radians = Math.toRadians(degrees);
        double cos = StrictMath.cos(radians);
        double sin = StrictMath.sin(radians);
        int outWidth = (int) Math.ceil(Math.abs(w * cos) + Math.abs(h * sin) - 1e-9);
        int outHeight = (int) Math.ceil(Math.abs(h * cos) + Math.abs(w * sin) - 1e-9);
        int[] out = new int[outWidth * outHeight];
        for (int y = 0; y < outHeight; y++) {
            double dy = y + 0.5 - outHeight / 2.0;
            for (int x = 0; x < outWidth; x++) {
                double dx = x + 0.5 - outWidth / 2.0;
                // source position in the image padded by one grey pixel
                double sx = Math.min(Math.max(cos * dx - sin * dy + w / 2.0 - 0.5 + 1, 0), w + 1);
                double sy = Math.min(Math.max(sin * dx + cos * dy + h / 2.0 - 0.5 + 1, 0), h + 1);
                int x0 = Math.min((int) Math.floor(sx), w);
                int y0 = Math.min((int) Math.floor(sy), h);
                double fx = sx - x0;
                double fy = sy - y0;
                int pixel = 0xff000000;
                for (int shift = 16; shift >= 0; shift -= 8) {
                    double top = padded(in, x0, y0, shift) * (1 - fx) + padded(in, x0 + 1, y0, shift) * fx;
                    double bottom = padded(in, x0, y0 + 1, shift) * (1 - fx) + padded(in, x0 + 1, y0 + 1, shift) * fx;
                    pixel |= ((int) Math.floor(top * (1 - fy) + bottom * fy + 0.5)) << shift;
                }
                out[y * outWidth + x] = pixel;
            }
        }
        return new Pixels(out, outWidth, outHeight);
    }

    /** One channel at (x, y) of the image padded by one grey (128) pixel on every side. */
    private static double padded(Pixels in, int x, int y, int shift) {
        if (x < 1 || y < 1 || x > in.width || y > in.height) {
            return 128;
        }
        return (in.argb[(y - 1) * in.width + x - 1] >> shift) & 0xff;
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
