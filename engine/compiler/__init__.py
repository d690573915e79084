"""The compiler: workspace files → validated models → plans, plus `<< >>` templating."""
