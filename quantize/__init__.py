"""docemb.quantize: int8 post-training quantization, calibrated on real images, picked by drift."""
