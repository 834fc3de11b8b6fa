"""The model list behind the Enhance protocol's model fields."""
from pyworkflow.object import String
from pyworkflow.wizard import Wizard

from .constants import NORM_MASK
from .protocols import ProtDeepEMhancer


def model_names(masked: bool) -> list[str]:
    """Installed models that fit the normalisation (masked or not), first choice first."""
    from .models import model_choices

    wanted = "masked" if masked else "noise"
    return [choice.name for choice in model_choices() if choice.normalization == wanted]


class DeepEMhancerModelWizard(Wizard):
    """Lists the installed models and sets the chosen one."""
    _targets = [(ProtDeepEMhancer, ["modelName", "maskedModelName"])]

    def show(self, form, *args):
        from pyworkflow.gui.dialog import ListDialog, showInfo
        from pyworkflow.gui.tree import ListTreeProviderString

        masked = form.protocol.normalization.get() == NORM_MASK
        names = model_names(masked)
        if not names:
            showInfo("DeepEMhancer models", "No model for this normalisation is installed: run "
                     "'scipion3 installb deepemhancerWeights'.", form.root)
            return
        provider = ListTreeProviderString([String(name) for name in names])
        dialog = ListDialog(form.root, "DeepEMhancer models", provider, "Select a model", selectmode="browse")
        if dialog.resultYes() and dialog.values:
            form.setVar("maskedModelName" if masked else "modelName", dialog.values[0].get())
