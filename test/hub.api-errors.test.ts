import { describe, expect, it } from 'vitest'
import { RollcallError } from '../common/errors.js'
import { errorBody } from '../hub/api/app.js'

/** An error answer's code and message are the error's own, whatever its details hold (issue #16). */
describe('API error bodies', () => {
  it('carry the details beside the code and message', () => {
    expect(errorBody(new RollcallError('DEVICE_OFFLINE', 'device "d1" is not reachable now', { id: 'c1', lastSeen: 5 })))
      .toEqual({ error: { code: 'DEVICE_OFFLINE', message: 'device "d1" is not reachable now', id: 'c1', lastSeen: 5 } })
  })

  it('never let a detail replace the code or the message', () => {
    const body = errorBody(new RollcallError('COMMAND_TIMEOUT', 'no reply in 10000 ms', { code: 'TIMEOUT', message: 'from the device', id: 'c2' }))
    expect(body.error.code).toBe('COMMAND_TIMEOUT')
    expect(body.error.message).toBe('no reply in 10000 ms')
    expect(body.error.id).toBe('c2')
  })
})
