"""Training our own models: simulated data (``simulate``), cube sampling (``dataset``), the loop
(``loop``), its configuration (``config``) and the validation table (``validate``)."""
