"""Wizards: the model list behind the Enhance protocol's model fields (installed models with a line on
each, the recommended one selected), and the mask protocol's automatic threshold."""
from dataclasses import dataclass

from pyworkflow.gui.tree import TreeProvider
from pyworkflow.wizard import Wizard

from .constants import NORM_MASK, RECOMMENDED_MODEL
from .convert import map_path, read_volume_file
from .protocols import ProtDeepEMhancer, ProtDeepEMhancerMask


@dataclass
class ModelRow:
    """One line of the list (a plain object: the list widget tags each row with an attribute)."""

    name: str  # the field's value
    description: str


def model_rows(protocol) -> list[ModelRow]:
    """Every model offered for the protocol's input, the recommended one first."""
    from .models import offered_choices

    masked = protocol.normalization.get() == NORM_MASK
    rows = [ModelRow(choice.name, choice.description or choice.origin)
            for choice in offered_choices(masked, protocol.usesHalfMaps())]
    if not masked:
        rows.insert(0, ModelRow(RECOMMENDED_MODEL, f"now {protocol.getModelName()}: the official tightTarget "
                                                   f"when installed, else the bundled model for this input"))
    return rows


class ModelRows(TreeProvider):
    """Two columns, name and description; the field's current value is selected."""

    def __init__(self, rows: list[ModelRow], current: str):
        super().__init__()
        self.rows, self.current = rows, current

    def getColumns(self):
        return [("Model", 150), ("Description", 1100)]  # the longest description whole

    def getObjects(self):
        return self.rows

    def getObjectInfo(self, row):
        return {"key": row.name, "text": row.name, "values": (row.description,), "selected": row.name == self.current}


class DeepEMhancerModelWizard(Wizard):
    """Lists the models that fit the input and sets the chosen one."""
    _targets = [(ProtDeepEMhancer, ["modelName", "maskedModelName"])]

    def show(self, form, *args):
        from pyworkflow.gui.dialog import ListDialog, showInfo

        protocol = form.protocol
        field = "maskedModelName" if protocol.normalization.get() == NORM_MASK else "modelName"
        rows = model_rows(protocol)
        if not rows:
            showInfo("DeepEMhancer models", "No model for this normalisation is installed: run "
                     "'scipion3 installb deepemhancerWeights'.", form.root)
            return
        dialog = ListDialog(form.root, "DeepEMhancer models", ModelRows(rows, getattr(protocol, field).get()),
                            "Select a model", selectmode="browse", selectOnDoubleClick=True)
        if dialog.resultYes() and dialog.values:
            form.setVar(field, dialog.values[0].name)


def automatic_threshold_of(protocol) -> float:
    """The threshold the mask protocol's automatic mode would choose for its map (the engine's rule)."""
    from deepemhancer.molecule_masks import automatic_threshold

    volume = protocol.inputVolume.get()
    source = read_volume_file(map_path(volume.getFileName()), volume.getSamplingRate())
    return automatic_threshold(source.data, source.isotropic_voxel_size, protocol.lowpass.get())


class DeepEMhancerMaskThresholdWizard(Wizard):
    """Puts the automatic threshold of the chosen map in the field, and says what it is."""
    _targets = [(ProtDeepEMhancerMask, ["threshold"])]

    def show(self, form, *args):
        from pyworkflow.gui.dialog import showInfo

        protocol = form.protocol
        if protocol.inputVolume.get() is None:
            showInfo("Mask threshold", "Select the map first.", form.root)
            return
        value = automatic_threshold_of(protocol)
        form.setVar("threshold", value)
        showInfo("Mask threshold", f"The automatic threshold of this map, low-passed to {protocol.lowpass.get():g} Å, "
                                   f"is {value:.4g}: the solvent level plus 3 standard deviations of its noise. It "
                                   f"is now in the field; raise it for a tighter mask.", form.root)
