"""transformers' ``ModelOutput``: the base of what the Llama's forward and ``generate`` return."""
import dataclasses


class ModelOutput:
    """transformers' ModelOutput: ``out.field``, ``out["field"]``, and ``out[0]`` -- an index counts
    only the fields that are set. transformers 5 calls the KV cache ``cache``; ``past_key_values``,
    its old name, still reads it (attribute, key, ``in``)."""
    _OLD_NAMES = {"past_key_values": "cache"}

    def to_tuple(self):
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def keys(self):
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __contains__(self, key):
        return self._OLD_NAMES.get(key, key) in self.keys()

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self:
                raise KeyError(f"{key!r} is not set in this output; it has {self.keys()}")
            return getattr(self, self._OLD_NAMES.get(key, key))
        return self.to_tuple()[key]

    def __iter__(self):  # a ModelOutput is an OrderedDict: iterating gives the names of the fields set
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def values(self):
        return list(self.to_tuple())

    def items(self):
        return list(zip(self.keys(), self.to_tuple()))

    @property
    def past_key_values(self):
        """transformers 4's name for ``cache``."""
        return self.cache
