# Split-CA layout: a second CA for client certificates (ca-client.crt, client.node.crt,
# client.<user>.crt), a DB Console certificate from its own mount, and user self-service.
terraform {
  required_providers {
    vault = { source = "hashicorp/vault", version = ">= 5.6, < 6.0" }
  }
}

provider "vault" {}

resource "vault_auth_backend" "userpass" {
  type = "userpass"
}

module "crdb_pki" {
  source             = "../.."
  mode               = "split-ca"
  root_mount         = "pki-root"
  aia_base_url       = "https://vault.internal:8200"
  mounts             = { node = "pki-crdb", client = "pki-crdb-client", ui = "pki-web" }
  ui_hosts           = ["console.db.internal"]
  user_auth_accessor = vault_auth_backend.userpass.accessor
  nodes = {
    n1 = { hosts = ["n1.db.internal", "localhost", "127.0.0.1"] }
    n2 = { hosts = ["n2.db.internal", "localhost", "127.0.0.1"] }
  }
}

output "mounts" {
  value = module.crdb_pki.mounts
}
