"""Statistics: one metric table, histograms, and the views built on them."""
