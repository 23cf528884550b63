"""Stage 2, preprocessing: reorientation, registration to MNI, resampling, normalisation, QC."""
