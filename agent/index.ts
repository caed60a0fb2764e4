/** The agent's public surface, for the CLI and the simulator. */
export { createAgent, agentVersion, AGENT_CAPABILITIES, MAX_EVENT_BYTES, type Agent, type AgentDeps, type AgentStats, type EventLevel } from './agent.js'
export { loadAgentConfig, resolveAgentConfig, AGENT_DEFAULTS, type AgentConfig, type AgentConfigInput, type AgentFlags, type LoadAgentConfigInput } from './config.js'
export { builtinSensors, simulatedSensor, seedFromName, SIM_MODELS, type SensorSource, type SimulatedSensorConfig, type SimModel } from './sensors.js'
export type { OutboxStats } from './outbox.js'
export type { SenderStats } from './sender.js'
export type { SamplerStats } from './sampler.js'
export type { LinkStats } from './link.js'
