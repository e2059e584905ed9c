"""Development tools: the embedded OpenBao dev server, the demo, the lab provisioner. Production never imports these."""
