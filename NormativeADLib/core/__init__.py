"""What every layer shares and that needs only the standard library (and numpy): errors, options, the
model grid, cards and the catalogue, where files live (locations), atomic writes (writes) and held
interrupts (interrupts). The Slicer module imports it in Slicer's own process, so nothing here may
import torch, SimpleITK or scikit packages."""
