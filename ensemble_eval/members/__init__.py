"""Members: every checkpoint format and published source, read safely, behind one registry.

    registry.py               the ordered list of formats; dispatch (sniff, spec prefixes,
                              program kinds, architecture namespaces); imports no torch
    format.py                 what a format is (FileFormat, PublishedSource, Loaded) and the
                              shared path from a state dict to a network
    torch_pickle.py           torch.save files (weights_only unless trusted)
    safetensors_file.py       safetensors files
    program_format.py         what TorchScript and torch.export members share
    torchscript.py            TorchScript archives
    torch_export.py           torch.export programs (.pt2)
    torchvision_published.py  torchvision:<builder>[:<WEIGHTS>]
    timm_published.py         timm:<name>, and the timm/<name> architecture namespace
    convention.py             input conventions: sidecars, embedded entries, their checks
    tensors.py                finding the weights in a loaded file, checking and hashing them
    inspection.py             Inspection / Member, inspect and load, checks across members,
                              against a protocol's views and against published figures

Nothing is imported here, so `modelpaths` can read the spec prefixes before torch is imported.
"""
