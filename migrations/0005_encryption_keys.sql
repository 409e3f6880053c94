-- Each connector's X25519 public key: senders on `encrypt` routes encrypt to it.
ALTER TABLE connectors ADD COLUMN enc_jwk TEXT;
