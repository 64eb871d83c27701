"""sustainml-exp: reproduce and extend the resource-efficient training methods of SustainML D3.2."""

__version__ = "0.1.0"
