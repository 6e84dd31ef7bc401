"""SavedModel export of As-ViT classifiers and detectors (`asvit export`)."""
