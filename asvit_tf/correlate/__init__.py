"""Do the measures at initialisation predict accuracy? Ground-truth tables, the statistics
that compare a measure's ranking with the trained accuracies, and the measuring of the
networks of a table (`asvit correlate`)."""
import os

DATA_DIR = os.path.join(os.path.dirname(__file__), 'data')
# ViT-Bench-101's PiT subset with CIFAR-100 accuracies (Apache-2.0, see data/README.md).
PIT_C100 = os.path.join(DATA_DIR, 'vit_bench_101_pit_c100.json')
PIT_C100_NAME = 'asvit_tf/correlate/data/vit_bench_101_pit_c100.json'   # as reports name it
