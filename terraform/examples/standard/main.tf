# Standard layout: dual-purpose node.crt (CN=node), intermediates signed by an existing Vault root mount.
terraform {
  required_providers {
    vault = { source = "hashicorp/vault", version = ">= 5.6, < 6.0" }
  }
}

provider "vault" {} # VAULT_ADDR / VAULT_TOKEN from the environment

module "crdb_pki" {
  source       = "../.."
  mode         = "standard"
  root_mount   = "pki-root"
  aia_base_url = "https://vault.internal:8200"
  nodes = {
    n1 = { hosts = ["n1.db.internal", "10.0.0.1", "localhost", "127.0.0.1"] }
    n2 = { hosts = ["n2.db.internal", "10.0.0.2", "localhost", "127.0.0.1"] }
    n3 = { hosts = ["n3.db.internal", "10.0.0.3", "localhost", "127.0.0.1"] }
  }
  cert_auth = { enabled = true } # nodes renew by logging in with their own node.crt
}

output "vaultpki_pki" {
  value = module.crdb_pki.vaultpki_config
}
