"""From a residual to a heatmap and a segmentation (anomaly), and the figures of a case (metrics,
perceptual). Imported by the Slicer module in Slicer's own process for the threshold slider."""
