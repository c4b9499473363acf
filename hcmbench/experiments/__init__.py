"""The experiments that answer the study's questions, built on the library below them:

- `study`: the published study's Table 1, every model at one CPU budget (`hcmbench study`);
- `utility`: does synthetic data help an HCM classifier on scarce real data (`hcmbench utility`).
"""
