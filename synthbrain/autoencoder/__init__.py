"""Stage 3, the autoencoder: image + label map <-> latent."""
