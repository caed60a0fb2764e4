import { describe, expect, it } from 'vitest'
import type { AedesPersistence, Packet } from 'aedes-persistence'
import { createRetainedPersistence } from '../broker/retained-index.js'
import { requireCjs } from '../common/cjs.js'
import { connectClient, deviceOptions, leakCheckedCleanups, startBroker, TOKENS, waitFor } from './broker.harness.js'

/**
 * broker/retained-index.ts: retained lookups for filters without wildcards
 * come from an index by topic instead of a scan of every retained message
 * (issue #14: the scan made a fleet's connects quadratic). What must hold is
 * what aedes's own store answered, for every filter.
 */

const cleanups = leakCheckedCleanups()

function retainedPacket(topic: string, payload: string): Packet {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: true, dup: false, messageId: 1, brokerId: 'b', brokerCounter: 1 } as unknown as Packet
}

async function lookup(p: AedesPersistence, filters: string[]): Promise<string[]> {
  const got: string[] = []
  for await (const packet of p.createRetainedStreamCombi(filters) as AsyncIterable<{ topic: string; payload: Buffer }>) {
    got.push(`${packet.topic}=${packet.payload.toString()}`)
  }
  return got.sort()
}

/** As aedes 1.x stores a retained message: without a callback, awaiting the promise. */
async function store(p: AedesPersistence, packet: Packet): Promise<void> {
  await (p.storeRetained as unknown as (packet: Packet) => Promise<void>)(packet)
}

describe('createRetainedPersistence', () => {
  it('answers every filter as aedes\'s own store does, over 2,000 random retains, clears and lookups', async () => {
    const stock = (requireCjs('aedes-persistence') as () => AedesPersistence)()
    const indexed = createRetainedPersistence()
    // A fixed linear congruential sequence: the same run every time.
    let seed = 777
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!
    const ids = ['d1', 'd2', 'd3', 'd4', 'd5']
    const leaves = ['state', 'config', 'x/y']
    const filters = [
      ...ids.flatMap((id) => leaves.map((l) => `devices/${id}/${l}`)),
      'devices/+/state', 'devices/#', 'devices/d1/#', '#', '+/d2/config', 'devices/+/x/+', 'devices/none/state',
    ]
    let lookups = 0
    let nonEmpty = 0
    for (let i = 0; i < 2000; i++) {
      const r = rand()
      if (r < 0.5) {
        // Retain, or clear with an empty payload (one in five).
        const packet = retainedPacket(`devices/${pick(ids)}/${pick(leaves)}`, rand() < 0.2 ? '' : `v${i}`)
        await store(stock, packet)
        await store(indexed, packet)
      } else {
        const asked = rand() < 0.5 ? [pick(filters)] : [pick(filters), pick(filters), pick(filters)]
        const want = await lookup(stock, asked)
        expect(await lookup(indexed, asked), asked.join(' ')).toEqual(want)
        lookups++
        if (want.length > 0) nonEmpty++
      }
    }
    // The comparison meant something: most lookups found retained messages.
    expect(lookups).toBeGreaterThan(800)
    expect(nonEmpty).toBeGreaterThan(lookups / 2)
  })

  it('replays to a real client exactly the retained message its exact filter names, beside a wildcard one', async () => {
    const { url } = await startBroker(cleanups)
    for (const id of ['dev-a', 'dev-b']) {
      const dev = await connectClient(cleanups, url, deviceOptions(id))
      await dev.publishAsync(`devices/${id}/state`, `birth-${id}`, { qos: 1, retain: true })
    }
    const obs = await connectClient(cleanups, url, { clientId: 'Ops:1', username: 'observer:ops', password: TOKENS['observer:ops'] })
    const seen: string[] = []
    obs.on('message', (topic, payload, packet) => seen.push(`${topic}=${payload.toString()}${packet.retain ? ' (retained)' : ''}`))
    await obs.subscribeAsync('devices/dev-b/state', { qos: 1 })
    await waitFor(() => seen.length === 1, 'retained state by exact filter')
    await obs.subscribeAsync('devices/+/state', { qos: 1 })
    await waitFor(() => seen.length === 3, 'retained states by wildcard')
    expect(seen[0]).toBe('devices/dev-b/state=birth-dev-b (retained)')
    expect(seen.slice(1).sort()).toEqual(['devices/dev-a/state=birth-dev-a (retained)', 'devices/dev-b/state=birth-dev-b (retained)'])
  })
})
