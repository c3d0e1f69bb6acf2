// Entry point bundled into web/vendor/argon2.js by refresh.sh.
export { argon2id } from "hash-wasm";
