package dev.docemb.core;

/** One image ready for the model: float32 or int8 values in the contract's layout (batch 1). */
public final class ModelInput {
    public final float[] floats;
    public final byte[] int8;

    private ModelInput(float[] floats, byte[] int8) {
        this.floats = floats;
        this.int8 = int8;
    }

    static ModelInput ofFloats(float[] values) {
        return new ModelInput(values, null);
    }

    static ModelInput ofInt8(byte[] values) {
        return new ModelInput(null, values);
    }

    public boolean isInt8() {
        return int8 != null;
    }
}
