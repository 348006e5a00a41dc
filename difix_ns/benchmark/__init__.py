"""`difix-ns benchmark`: every method side by side on a sparse-view split of any nerfstudio dataset."""
