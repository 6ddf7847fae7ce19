"""Model code we own (matrix function networks, chapter 6)."""
