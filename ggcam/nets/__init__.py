"""Network definitions built from code (TF-slim): this project's MobileNet V1."""
