"""pytorch-grad-cam's Guided Grad-CAM recipe on a PyTorch MobileNet V1 with our weights.

Runs in its own venv (Python 3.11, torch, grad-cam; see benchmarks/setup_torch_venv.sh):

    benchmarks/.venv-torch/bin/python benchmarks/peer_pytorch_grad_cam.py --weights=w.npz \
        --images=DIR [--batches=1,8,32] [--repeats=3]
    ... --weights=w.npz --check=reference.npz     # logits agreement with TensorFlow

The model mirrors nets/mobilenet_v1.py: TF's "SAME" padding is reproduced with an explicit
asymmetric zero pad before every stride-2 convolution (TF puts the odd extra pixel at the
bottom/right), batch norm with epsilon 0.001, ReLU6.

The recipe follows the package's README and cam.py: GradCAM on the last conv block for the
batch, GuidedBackpropReLUModel (which explains one image per call) for each image,
show_cam_on_image, deprocess_image(cam_mask * gb), then three PNGs encoded with OpenCV.
"""
import argparse
import glob
import json
import os
import sys
import time

import cv2
import numpy as np
import torch
from torch import nn

SEPARABLE = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
             (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))


def conv_bn(cin, cout, kernel, stride, groups=1):
    layers = []
    if stride == 2:
        layers.append(nn.ZeroPad2d((0, 1, 0, 1)))  # TF SAME at even sizes: pad bottom/right only
        padding = 0
    else:
        padding = kernel // 2
    layers += [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
               nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU6()]
    return nn.Sequential(*layers)


class MobileNetV1(nn.Module):
    def __init__(self, num_classes=1001):
        super().__init__()
        blocks = [conv_bn(3, 32, 3, 2)]
        cin = 32
        for stride, cout in SEPARABLE:
            blocks += [conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1, 1)]
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.logits = nn.Conv2d(1024, num_classes, 1)

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.logits(x).flatten(1)


def load(weights_path):
    """The model with the weights exported by benchmarks/speed.py (TF names -> tensors)."""
    w = np.load(weights_path)
    model = MobileNetV1().eval()

    def set_conv_bn(block, scope, depthwise):
        conv, bn = [m for m in block if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        kernel = w[scope + ("/depthwise_weights" if depthwise else "/weights")]
        # TF [kh, kw, in, out] (depthwise: [kh, kw, in, 1]) -> torch [out, in/groups, kh, kw]
        kernel = kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(3, 2, 0, 1)
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel))
        for attr, name in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                           ("running_var", "moving_variance")):
            getattr(bn, attr).data = torch.from_numpy(w[scope + "/BatchNorm/" + name])

    set_conv_bn(model.features[0], "MobilenetV1/Conv2d_0", False)
    for i in range(1, 14):
        set_conv_bn(model.features[2 * i - 1], "MobilenetV1/Conv2d_%d_depthwise" % i, True)
        set_conv_bn(model.features[2 * i], "MobilenetV1/Conv2d_%d_pointwise" % i, False)
    model.logits.weight.data = torch.from_numpy(
        np.ascontiguousarray(w["MobilenetV1/Logits/Conv2d_1c_1x1/weights"].transpose(3, 2, 0, 1)))
    model.logits.bias.data = torch.from_numpy(w["MobilenetV1/Logits/Conv2d_1c_1x1/biases"])
    return model


def check(model, reference_path):
    """Max |logits difference| against TensorFlow's on the reference inputs."""
    ref = np.load(reference_path)
    with torch.no_grad():
        out = model(torch.from_numpy(ref["inputs"].transpose(0, 3, 1, 2).copy())).numpy()
    return float(np.abs(out - ref["logits"]).max())


def full_job(model, paths, batch):
    """Decode, preprocess, Grad-CAM + guided backprop, fusion and 3 PNGs for each image."""
    from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
    from pytorch_grad_cam.utils.image import preprocess_image
    gb_model = GuidedBackpropReLUModel(model=model, device="cpu")
    encoded = 0
    with GradCAM(model=model, target_layers=[model.features[-1]]) as cam:
        for start in range(0, len(paths), batch):
            rgbs = [np.float32(cv2.imread(p, 1)[:, :, ::-1]) / 255 for p in paths[start:start + batch]]
            # the model's own scaling: [0, 1] -> [-1, 1]
            tensor = torch.cat([preprocess_image(r, mean=[0.5] * 3, std=[0.5] * 3) for r in rgbs])
            grayscale = cam(input_tensor=tensor, targets=None)
            encoded += _fuse_and_encode(gb_model, tensor, rgbs, grayscale)
    return encoded


def _fuse_and_encode(gb_model, tensor, rgbs, grayscale):
    from pytorch_grad_cam.utils.image import deprocess_image, show_cam_on_image
    encoded = 0
    for i, rgb in enumerate(rgbs):
        gb = gb_model(tensor[i:i + 1].clone(), target_category=None)  # one image per call
        cam_mask = cv2.merge([grayscale[i]] * 3)
        pictures = [show_cam_on_image(rgb, grayscale[i], use_rgb=True), deprocess_image(gb),
                    deprocess_image(cam_mask * gb)]
        for pic in pictures:
            ok, _ = cv2.imencode(".png", pic[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
            encoded += ok
    return encoded


PEER_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "eigencam": "EigenCAM",
                "scorecam": "ScoreCAM", "ablationcam": "AblationCAM", "xgradcam": "XGradCAM",
                "layercam": "LayerCAM", "hirescam": "HiResCAM"}


def method_job(model, paths, name, batch=1):
    """One CAM method of the package over the images, ``batch`` per call: decode, preprocess, the maps."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.image import preprocess_image
    cls = getattr(pytorch_grad_cam, PEER_METHODS[name])
    with cls(model=model, target_layers=[model.features[-1]]) as cam:
        for start in range(0, len(paths), batch):
            rgbs = [np.float32(cv2.imread(p, 1)[:, :, ::-1]) / 255 for p in paths[start:start + batch]]
            tensor = torch.cat([preprocess_image(r, mean=[0.5] * 3, std=[0.5] * 3) for r in rgbs])
            cam(input_tensor=tensor, targets=None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--check", default=None, help="reference npz: print the max logits difference")
    parser.add_argument("--images", default=None)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=None,
                        help="comma-separated CAM methods (%s): time each alone, at the first of --batches"
                        % ", ".join(PEER_METHODS))
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    model = load(args.weights)
    if args.check:
        print(json.dumps({"max_abs_logits_diff": check(model, args.check), "torch": torch.__version__,
                          "threads": torch.get_num_threads()}))
        return
    paths = sorted(glob.glob(os.path.join(args.images, "*.jpg")))
    if args.methods:
        batch = int(args.batches.split(",")[0])
        for name in args.methods.split(","):
            method_job(model, paths[:1], name)  # warm-up
            start = time.perf_counter()
            method_job(model, paths, name, batch)
            seconds = time.perf_counter() - start
            print(json.dumps({"tool": "pytorch-grad-cam", "method": name, "images": len(paths), "batch": batch,
                              "images_per_s": len(paths) / seconds, "torch": torch.__version__}))
            sys.stdout.flush()
        return
    for batch in [int(b) for b in args.batches.split(",")]:
        full_job(model, paths[:batch], batch)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            full_job(model, paths, batch)
            times.append(time.perf_counter() - start)
        best = min(times)
        print(json.dumps({"tool": "pytorch-grad-cam", "batch": batch, "images": len(paths),
                          "images_per_s": len(paths) / best, "ms_per_image": 1000 * best / len(paths),
                          "torch": torch.__version__}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
