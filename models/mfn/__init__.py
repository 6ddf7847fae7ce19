"""Matrix function networks (thesis chapter 6) on mace-torch blocks."""
# mace sets the torch.load flag that e3nn 0.4.4's constants need under torch >= 2.6: import it first.
import mace.modules  # noqa: F401
