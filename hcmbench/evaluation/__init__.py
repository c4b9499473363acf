"""How good are generated images? Pixel metrics (SSIM / CC / MSE with nearest-neighbour matching),
a feature space trained on the data, distribution-level metrics, and the calibrated report.

    metrics.py       SSIM, Pearson CC, MSE as batched matrices; nearest-neighbour matching; diversity
    features.py      the project's own feature extractor, trained once per dataset and cached
    distribution.py  FID, KID, precision / recall / density / coverage in that feature space
    report.py        one table: a generator's rows beside the calibration rows, as rich, Markdown, CSV
"""
