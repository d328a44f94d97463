"""Training package for CycleGANExplain: data, classifier, CycleGAN-AM, export, evaluation (MONAI)."""
