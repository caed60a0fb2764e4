export { createBroker, PACKET_HEADROOM_BYTES, LOSSY_BUFFER_BYTES } from './broker.js'
export { CONNECT_REFUSALS, type ConnectRefusalCode } from './connect-policy.js'
export * from './types.js'
