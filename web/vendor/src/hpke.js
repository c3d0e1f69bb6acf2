// Entry point bundled into web/vendor/hpke.js by refresh.sh.
export { Aes256Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
export { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
export { XWing } from "@hpke/hybridkem-x-wing";
