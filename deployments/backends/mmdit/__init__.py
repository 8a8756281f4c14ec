"""The MMDiT text-to-image model: text encoder, image codec, transformer, sampler, pipeline."""
