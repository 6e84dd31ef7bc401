"""Drawing detections (boxes, instance masks, class and score) on an image."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

from official.vision.ops import mask_ops


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """An image of any integer/float dtype, gray or RGB(A), as uint8 RGB (min-max stretched if
  it is not already 8-bit)."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 4:
    image = image[..., :3]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  if image.dtype != np.uint8:
    image = image.astype(np.float64)
    low, high = np.percentile(image, 0.5), np.percentile(image, 99.5)
    image = np.clip((image - low) / max(high - low, 1e-12), 0, 1) * 255
  return image.astype(np.uint8)


def load_image(path: str) -> np.ndarray:
  """An image file (PNG, JPEG, TIFF incl. 16-bit) as uint8 RGB [H, W, 3]."""
  with Image.open(path) as im:
    return to_rgb_uint8(np.array(im))


def select(outputs: Dict[str, np.ndarray], score_threshold: float) -> Dict[str, np.ndarray]:
  """Detections of the first image above the threshold, boxes mapped back to that image.

  Mask R-CNN serving returns boxes in the resized input's coordinates; `image_info[0, 2]` is
  the (y, x) scale from the original image.
  """
  n = int(np.asarray(outputs['num_detections'])[0])
  scores = np.asarray(outputs['detection_scores'])[0, :n]
  keep = scores >= score_threshold
  boxes = np.asarray(outputs['detection_boxes'])[0, :n][keep].astype(np.float64)
  if 'image_info' in outputs:
    scale = np.asarray(outputs['image_info'])[0, 2]
    boxes = boxes / np.tile(scale, 2)
  result = {'boxes': boxes, 'scores': scores[keep],
            'classes': np.asarray(outputs['detection_classes'])[0, :n][keep].astype(int)}
  if 'detection_masks' in outputs:
    result['masks'] = np.asarray(outputs['detection_masks'])[0, :n][keep]
  return result


def draw_detections(image: np.ndarray, detections: Dict[str, np.ndarray],
                    class_names: Optional[Sequence[str]] = None,
                    mask_alpha: float = 0.45) -> Image.Image:
  """Boxes ([ymin, xmin, ymax, xmax] in pixels), pasted masks and 'class score' labels."""
  height, width = image.shape[:2]
  canvas = image.astype(np.float64).copy()
  rng = np.random.default_rng(0)
  colours = rng.integers(60, 256, size=(max(1, len(detections['boxes'])), 3))
  boxes = detections['boxes']
  if 'masks' in detections and len(boxes):
    xywh = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                     boxes[:, 2] - boxes[:, 0]], axis=-1)
    pasted = mask_ops.paste_instance_masks(detections['masks'], xywh, height, width)
    for mask, colour in zip(pasted, colours):
      on = mask > 0
      canvas[on] = (1 - mask_alpha) * canvas[on] + mask_alpha * colour
  out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(out)
  for box, cls, score, colour in zip(boxes, detections['classes'], detections['scores'],
                                     colours):
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    draw.rectangle([xmin, ymin, xmax, ymax], outline=tuple(int(c) for c in colour), width=2)
    name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
    draw.text((xmin + 2, max(0.0, ymin - 11)), f'{name} {score:.2f}',
              fill=tuple(int(c) for c in colour))
  return out
