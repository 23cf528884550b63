"""Stage 4, latent diffusion: the conditional noise-prediction UNet."""
