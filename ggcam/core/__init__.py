"""The numpy core: Grad-CAM, guided backpropagation, their fusion and display (``gradcam``)."""
