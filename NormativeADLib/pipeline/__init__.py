"""One case, end to end: preprocess onto the model grid, bring a study's other volumes onto the first,
check the contrast, restore, and the analysis that writes heatmap, segmentation, metrics and figures."""
