"""hadeck: the operations console (see issue 3; only its entry point exists so far)."""
