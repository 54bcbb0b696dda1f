'use strict';
// The compiled addon; throws when it was not built (berth then serves without it).
module.exports = require('./build/Release/berth_sendfile.node');
