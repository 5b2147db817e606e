"""The analyses and measures of the generalizable-SR literature as a library, typed and free of argparse.

``measures``: numbers computed from arrays (Calinski-Harabasz index, frequency-band errors, DCT entropy, probes);
``representation``: what a network's features say about the degradation (DDR, clean/degraded cosine similarity);
``spectral``: per-setting curves over frequency bands (SR error, dominant DCT bands, degradation residuals);
``savl``: SAVL's inferred-variance correlations and content-leakage probes;
``evaluation``: models x datasets x settings -> PSNR / SSIM / LPIPS rows and their reports, with a result cache.
The commands ``gsr analyze`` and ``gsr evaluate`` and the study runner (``gsr.repro``) call them.
"""
